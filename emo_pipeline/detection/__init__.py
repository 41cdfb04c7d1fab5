"""The YOLO object detector of dataset A (ultralytics, offline)."""
