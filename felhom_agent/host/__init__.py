"""Host storage: usage alerts, disk health and sensor readings, USB backup disk rules.

Pure rules over plain values (:mod:`.thresholds`, :mod:`.health`, :mod:`.usb`) and the one
thread that reads disks, SMART and sensors on its own schedule (:mod:`.monitor`). See
``docs/architecture.md`` ("Host storage").
"""
