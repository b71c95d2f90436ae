"""The Litestar inference server (docs/architecture.md §5–§8): `create_app(settings)` in `service.app`,
`python -m service` to run it. Imports `models` (the predictor protocol and artifacts), never `training`."""
