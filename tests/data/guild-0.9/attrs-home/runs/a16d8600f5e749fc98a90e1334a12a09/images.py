import os

from PIL import Image

size = 8

os.makedirs("images", exist_ok=True)
img = Image.new("RGB", (size, size // 2 * 3), (200, 30, 30))
img.save("images/red.png")
img.convert("L").save("gray.jpg", quality=80)
img.convert("P").save("images/anim.gif")
img.save("scan.tiff")
print("loss: 0.5")
