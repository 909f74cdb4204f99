//! Noise IK authentication and encryption, and node identity keys (being built).
