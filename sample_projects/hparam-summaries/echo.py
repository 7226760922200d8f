"""Print the flag it is given as a metric: ``--x_flag 2.5`` prints ``x_metric: 2.5``."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--x_flag", type=float, default=1.0)
args = parser.parse_args()

print(f"x_metric: {args.x_flag}")
