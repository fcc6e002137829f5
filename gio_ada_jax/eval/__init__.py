"""Evaluation: the metrics (mIoU, depth errors), the split evaluator over checkpoints, the reports
it writes and the pictures."""
