//! AdamW with saveable state and learning-rate schedules (work in progress).
