//! HTTP front door: route matching and request hand-off to the router
