"""HTTP route handlers, one controller per concern."""

from service.controllers.health import HealthController
from service.controllers.metrics import MetricsController
from service.controllers.models import ModelsController
from service.controllers.predict import PredictController
from service.controllers.stream import StreamController

__all__ = ["HealthController", "MetricsController", "ModelsController", "PredictController", "StreamController"]
