"""The task layer: each piece of work the project does, written once, for the CLI, the Dask jobs and the pages.

A task is one module with one frozen parameters dataclass (the only home of its defaults; bounds checked in
``__post_init__``, raising :class:`sccore.InputError` that names the fix; ``asdict()`` / ``from_dict()`` to and
from plain JSON) and one ``run(params, progress, should_stop)`` that reads its input file(s), writes its output
atomically and returns what it computed. ``progress(fraction, message)`` reports; ``should_stop()`` is checked
between units of work, and a true answer stops the task with :class:`sccore.errors.Cancelled`, leaving no result.

=========================  ===================================  ==========================  ============
module                     parameters                           command line                job kind
=========================  ===================================  ==========================  ============
``embed_pca``              :class:`EmbedPCAParams`              ``embed --method pca``
``embed_encoder``          :class:`EmbedEncoderParams`          ``embed --method encoder``  ``embed``
``neighbors``              :class:`NeighborsTaskParams`         ``neighbors``
``cluster``                :class:`ClusterParams`               ``cluster``
``integrate``              :class:`IntegrateParams`             ``integrate``               ``integrate``
``umap``                   :class:`UMAPTaskParams`              ``umap``                    ``umap``
``train``                  :class:`TrainParams`                 ``train``                   ``train``
``finetune``               :class:`FinetuneParams`              ``finetune``                ``finetune``
``knockout``               :class:`KnockoutParams`              ``knockout``
``screen``                 :class:`ScreenParams`                ``screen``                  ``screen``
``validate``               :class:`ValidateParams`              ``validate-knockout``
``transfer``               :class:`TransferParams`              ``transfer``
``metrics``                :class:`MetricsTaskParams`           ``metrics``                 ``metrics``
``markers``                :class:`MarkersParams`               ``markers``
``de``                     :class:`DEParams`                    ``de``
``atlas``                  :class:`AtlasTaskParams`             ``atlas``                   ``atlas``
``report``                 :class:`ReportParams`                ``report``
``embed_partitions``       :class:`EmbedPartitionsParams`       ``embed-partitions``
=========================  ===================================  ==========================  ============

``sccore.cli`` builds the parameters from the flags (whose defaults it reads from these dataclasses) and calls
``run`` with a progress bar, or submits the same parameters as a job (``--scheduler``); ``sccore.jobs`` maps
each job kind to its parameters and ``run``. ``base`` holds what they share.
"""
