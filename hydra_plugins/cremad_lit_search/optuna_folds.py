"""Hydra's sweeper slot for cremad-lit's hyperparameter search: `python train.py hparams_search=speech_optuna ...`.

Hydra finds sweepers only in the `hydra_plugins` package, so this is the plugin's shell: the search itself (Optuna's
ask/tell over inner folds, the SQLite study, pruning, search.md) is cremad_lit/search.py. Settings:
conf/hydra/sweeper/optuna.yaml. Nothing heavy is imported here: Hydra imports every plugin module at each start.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper


class OptunaFoldSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from cremad_lit.search import FoldSearch

        return FoldSearch(self.settings, self.config, self.launcher, self.validate_batch_is_legal).run(
            arguments
        )
