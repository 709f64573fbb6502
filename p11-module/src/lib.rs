//! C shell placeholder
