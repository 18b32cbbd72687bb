"""Hardware layer: the real Franka FR3 arm and Intel RealSense cameras (not yet implemented)."""
