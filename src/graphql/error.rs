//! How an [`ApiError`] becomes a GraphQL error (see `crate::error` for which
//! error type to use where).

use async_graphql::ErrorExtensions;

use crate::error::ApiError;

/// The one way an [`ApiError`] becomes a GraphQL error: message plus
/// `extensions.code`. (async-graphql's blanket `From<impl Display>` would
/// drop the code, so resolvers call `.map_err(|e| e.extend())`.)
impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        if let Self::Internal(cause) = self {
            tracing::error!(cause = format!("{cause:#}"), "internal error");
        }
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Self::CostLimitExceeded {
                account,
                region,
                limit,
            } = self
            {
                ext.set("account", account.as_str());
                ext.set("region", region.as_str());
                ext.set("limit", *limit as u64);
            }
        })
    }
}
