//! Dimension algebra helpers and one shape rule per primitive.
