"""SAE features that link number tokens to the trait (``interp features``).

* :mod:`interp.instruments.features.sae`: residual-stream activations of a base, TopK and L1 sparse
  autoencoders trained with sae-lens (resumable, saved in sae-lens's own format), and their
  reconstruction quality (fraction of variance unexplained, the model's loss with the SAE
  spliced in, L0);
* :mod:`interp.instruments.features.analysis`: trait features per animal, the links from every number token
  to the trait (geometry, gradient x activation attribution, activations at number positions of
  teacher and base generations), subliminal prompting, cross-base overlap, students' feature shift;
* :mod:`interp.instruments.features.attribution`: attribution of a trait (target token sequences) to
  every SAE feature at every position of a prompt, through SAEs spliced into any HookedTransformer,
  error term kept (attribution patching or integrated gradients), and its check against true ablation;
* :mod:`interp.instruments.features.trait_attribution`: that attribution on bases, teachers and
  students compared feature by feature, per-position maps of the teacher's numbers, dashboard data;
* :mod:`interp.instruments.features.persona`: the misalignment world's misaligned-persona feature
  (the SAE feature that separates villain from aligned persona lines) on its bases, and its
  activation in a run's teachers and students (``interp features --trait misalignment``);
* :mod:`interp.instruments.features.pipeline`: :class:`~interp.instruments.features.pipeline.FeaturesConfig` and
  :func:`~interp.instruments.features.pipeline.run_features`, the stage that writes ``DIR/features.json``;
* :mod:`interp.report.features`: the figures and
  :func:`~interp.report.features.report_sections` for ``interp report``.
"""
