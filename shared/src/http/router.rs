//! [`Router`]: exact-path GET routes and their handlers.

use super::Reply;

type HandlerFn = Box<dyn Fn() -> Reply + Send + Sync>;

/// A GET route (HEAD is answered wherever GET is).
pub struct Route {
    pub path: &'static str,
    /// Logged at debug instead of info (probes and scrapes).
    pub quiet: bool,
    handler: HandlerFn,
}

/// Exact-path routing over a handful of routes; every unknown path is one
/// label value ("unmatched") so clients cannot grow the series count.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub fn get(
        self,
        path: &'static str,
        handler: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.route(path, false, handler)
    }

    /// A GET route whose requests are logged at debug (health, readiness, metrics).
    pub fn get_quiet(
        self,
        path: &'static str,
        handler: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.route(path, true, handler)
    }

    fn route(
        mut self,
        path: &'static str,
        quiet: bool,
        handler: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.routes.push(Route {
            path,
            quiet,
            handler: Box::new(handler),
        });
        self
    }

    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path)
    }

    pub fn routes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|r| r.path)
    }
}

impl Route {
    pub fn call(&self) -> Reply {
        (self.handler)()
    }
}
