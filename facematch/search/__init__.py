"""Search: ranking candidates, the view offset, review bands, their calibration, and review decisions."""
