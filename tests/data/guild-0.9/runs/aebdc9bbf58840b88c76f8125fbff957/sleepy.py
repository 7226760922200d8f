import time

secs = 60.0
print("loss: 1.0")
time.sleep(secs)
