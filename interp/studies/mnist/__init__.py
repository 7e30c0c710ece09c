"""The paper's MNIST auxiliary-logit experiment (section 6 of Cloud, Le et al. 2025): batched MLP
teachers and students (:mod:`.model`), digit data (:mod:`.data`), and the experiment with its
weight-space and gradient-alignment measurements (:mod:`.experiment`)."""

from interp.studies.mnist.experiment import MnistConfig, run_experiment

__all__ = ["MnistConfig", "run_experiment"]
