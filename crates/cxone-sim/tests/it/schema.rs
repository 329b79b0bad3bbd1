//! Schema knobs.
