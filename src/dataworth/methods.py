"""Every method that values training rows, by name: the model-agnostic valuators and the gradient attributors
(which also follow the valuator contract ``fit(X, y, reference=...)``). The CLI, ``dataworth.value`` and the
detection benchmark look methods up here."""

from __future__ import annotations

from dataworth.influence.influence import InfluenceFunction, RescaledInfluence
from dataworth.influence.layerif import LayerInfluence
from dataworth.influence.tracin import TracIn
from dataworth.influence.trak import TRAK
from dataworth.valuation import METHODS as VALUATION_METHODS
from dataworth.valuation import Valuator

#: Gradient-based methods (a model: the built-in MLP by default, or one passed as ``model=``).
ATTRIBUTION_METHODS: dict[str, type[Valuator]] = {cls.method: cls for cls in (InfluenceFunction, RescaledInfluence, LayerInfluence, TracIn, TRAK)}
METHODS: dict[str, type[Valuator]] = {**VALUATION_METHODS, **ATTRIBUTION_METHODS}
