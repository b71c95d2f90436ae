"""HTTP route handlers, one controller per concern."""

from service.controllers.health import HealthController
from service.controllers.metrics import MetricsController
from service.controllers.models import ModelsController
from service.controllers.predict import PredictController

__all__ = ["HealthController", "MetricsController", "ModelsController", "PredictController"]
