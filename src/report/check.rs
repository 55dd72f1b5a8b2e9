//! Regression checks (placeholder, filled in below).
