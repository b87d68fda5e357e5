"""Parameter counts of the reference architectures that the models of models/ reproduce at scale 1,
checked by test_models.py.

The reference is the CIFAR model zoo of kuangliu/pytorch-cifar as used by mahf93/tracking-memorization
(`ResNet18`, `VGG('VGG19')`, `DenseNet121`, `EfficientNetB0`, `GoogLeNet`, `MobileNet`, `MobileNetV2`,
`ResNeXt29_2x64d`, `SENet18`, `ShuffleNetV2(net_size=1)`, and `make_cnn(num_planes=64)` for the CNN),
and for AlexNet the CIFAR AlexNet of bearpaw/pytorch-classification. Counts are for 10 and 100 classes.

One figure differs from what the reference module holds: the reference EfficientNet-B0 builds a 1x1
expansion conv and its BatchNorm in the first block (32 * 32 + 2 * 32 = 1,088 parameters) that its
forward pass never uses; the figure here counts only the parameters the reference network runs
(`REFERENCE_MODULE_PARAMETERS` keeps the module's own count).
"""

REFERENCE_PARAMETERS: dict[str, dict[int, int]] = {
    "cnn": {10: 1_558_026, 100: 1_604_196},
    "densenet": {10: 6_956_298, 100: 7_048_548},
    "efficientnet": {10: 3_598_598, 100: 3_627_488},
    "googlenet": {10: 6_166_250, 100: 6_258_500},
    "mobilenet": {10: 3_217_226, 100: 3_309_476},
    "mobilenetv2": {10: 2_296_922, 100: 2_412_212},
    "resnet": {10: 11_173_962, 100: 11_220_132},
    "resnext": {10: 9_128_778, 100: 9_221_028},
    "senet": {10: 11_260_354, 100: 11_306_524},
    "shufflenetv2": {10: 1_263_854, 100: 1_356_104},
    "vgg": {10: 20_040_522, 100: 20_086_692},
    "alexnet": {10: 2_472_266, 100: 2_495_396},
}

REFERENCE_MODULE_PARAMETERS: dict[str, dict[int, int]] = {
    **REFERENCE_PARAMETERS,
    "efficientnet": {10: 3_599_686, 100: 3_628_576},
}
