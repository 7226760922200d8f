import sys

lr = 0.1
epochs = 3
dropout = True
optimizer = "adam"
layers = [64, 32]
seed = None
fail = False

print(f"lr={lr} epochs={epochs} dropout={dropout} optimizer={optimizer} layers={layers} seed={seed}")
for step in range(1, epochs + 1):
    print(f"step: {step}")
    print(f"loss: {0.5 / step * lr * 10:.4f}")
    print(f"acc: {1 - 0.1 / step}")
if fail:
    sys.exit(3)
