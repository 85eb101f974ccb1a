"""numpy-stats: a plugin with real dependencies (numpy, Pillow), imported from its own
Python environment inside the sandbox."""
import numpy as np
from PIL import Image

import plugbox


@plugbox.command
def stats(n: int) -> dict:
    """The sum of 0..n-1 (numpy), and a 40x20 image resized to 10x5 (Pillow)."""
    image = Image.new("RGB", (40, 20), (10, 20, 30)).resize((10, 5))
    return {
        "sum": int(np.arange(n).sum()),
        "size": list(image.size),
        "pixel": list(image.getpixel((3, 2))),
    }
