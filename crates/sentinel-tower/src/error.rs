//! Errors: the layer's bodies carry the inner body's error boxed; the service's error is the
//! inner service's own (the layer answers every failure of its own with a problem response).

/// The boxed error of [`RequestBody`](crate::RequestBody) and
/// [`ResponseBody`](crate::ResponseBody).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
