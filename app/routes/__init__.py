"""HTTP routes: one module-level `APIRouter` per job, included by `app.main.create_app`.

- `app.routes.deps`: the `Annotated` dependencies every router shares (runtime, settings,
  metrics, the predict query options, the API-key scheme, the unknown-query refusal)
- `app.routes.predict`: /predict, /predict/annotated and /predict/batch
- `app.routes.catalog`: /models
- `app.routes.ops`: the probes /healthz and /readyz, and /metrics
- `app.routes.page`: the page at / for trying the API in a browser

Routers hold no per-app state: what a handler needs comes from the app it serves, through
the dependencies in `deps`, so tests can build many apps in one process.
"""
