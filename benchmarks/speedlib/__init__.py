"""The measurements of ``benchmarks/speed.py``, one job per module (the script parses the arguments,
runs the sections in order and writes the resumable results file).

    plan        sizes of every measurement (full and --quick), the precisions measured
    machine     the machine fingerprint that makes cached figures comparable
    results     the resumable JSON results file (Store)
    timing      analytic ViT FLOPs, timing a call, torch threads, the matmul roofline
    inputs      image sets (shared data or synthetic) and the detector under test
    inference   images/s: forward alone, end to end (predict_iter), the peer pipeline
    accuracy    bf16 / int8 against fp32: probability agreement and AUC change
    training    training step cost with / without TAM masking; the _train-child process
    memory      peak RSS of a command (mpft predict, _train-child)
    decode      decode + preprocess ms per image, with and without JPEG draft mode
    paths       optional speed paths of the fp32 forward, kept only if faster and equivalent
    targets     the targets, judged from the results file, and their printed table
"""
