//! ai-classifier (in progress)
