//! Fault knobs.
