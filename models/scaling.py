"""One rounding rule for every width of every model, so `--scale` means the same thing everywhere."""
import math


def scaled(width: int, scale: float, minimum: int = 1, multiple_of: int = 1) -> int:
    """Return `width * scale` rounded half up to a multiple of `multiple_of`, never below `minimum`.

    `multiple_of` serves layers whose width must split evenly (groups, channel shuffles); `minimum`
    keeps tiny scales from producing empty layers.
    """
    units = math.floor(width * scale / multiple_of + 0.5)
    return max(minimum, units * multiple_of)
