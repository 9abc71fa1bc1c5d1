//! Gradient checks against finite differences, written once over the device.
