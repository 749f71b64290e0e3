"""The demo and test rig: a private broker, a platform stand-in, and `edge-agent demo`."""
