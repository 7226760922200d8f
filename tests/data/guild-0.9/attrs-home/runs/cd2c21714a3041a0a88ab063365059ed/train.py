lr = 0.1
epochs = 2

for step in range(1, epochs + 1):
    print(f"step: {step}")
    print(f"loss: {lr / step:.4f}")
