"""The Ultralytics YOLO detector backend (training, inference, head-feature proxy), set up for offline use."""
