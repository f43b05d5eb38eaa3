//! API errors: a status code and Docker's JSON body `{"message": "..."}`.

use berth_engine::EngineError;
use hyper::StatusCode;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match &e {
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            // A write into a read-only volume or root, as the API reference says.
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::NotModified(_) => StatusCode::NOT_MODIFIED,
            EngineError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            EngineError::Io { .. } | EngineError::System(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}
