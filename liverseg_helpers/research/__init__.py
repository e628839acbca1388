"""The research bench, beyond the notebooks: cross-validation on real CT and its tools.

``crossval`` runs leave-one-patient-out folds of the training recipes in ``variants`` and
tabulates them (``ablation_table``); ``ensemble`` and ``multiseed`` average models over seeds;
``reference`` trains and exports the shipped model; ``start_file`` finds the networks that
fine-tuning starts from; ``leakcheck`` keeps copies of a test scan out of training. The
course notebooks do not need this subpackage.
"""
