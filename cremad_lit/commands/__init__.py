"""The commands: each is `python -m cremad_lit <command> [args]` (also `python -m cremad_lit.commands.<command>`).

    python -m cremad_lit                      # lists them
    python -m cremad_lit eda data=synthetic   # Hydra commands take overrides like train.py

Entry points only (about 50 lines each): what they run lives in the library beside this folder (training.py,
evaluation.py, baselines.py, reporting.py, selection.py, checks.py, exploration.py, data/, predictors/, ...).
train.py and evaluate.py at the repository root are thin wrappers of the train and evaluate commands.
"""

# name -> what it does (the order `python -m cremad_lit` lists them in)
COMMANDS = {
    "train": "fit and test a model (what train.py runs): conf/train.yaml, experiments, sweeps",
    "evaluate": "test saved models on any split or corpus (what evaluate.py runs): conf/eval.yaml",
    "eda": "charts and counts of a corpus: statement, emotion, intensity, gender",
    "prepare": "decode every clip once into the prepared cache (parallel, resumable)",
    "baseline": "classical baselines (eGeMAPS / ComParE + logistic regression, majority) on train.py's split",
    "report": "a results table (mean ± std, intervals, paired comparison) from run or multirun folders",
    "select": "nested selection: choose between candidate recipes inside each outer fold's training speakers",
    "predict": "emotion probabilities for any media files, from one checkpoint or an ensemble",
    "export": "a trained network as an ONNX file, with its classes and preprocessing settings",
    "app": "a local demo page: drop a clip, see the probabilities, the faces and the Mel image the model saw",
    "human": "CREMA-D's crowd-vote accuracy (voice, face, audio-visual)",
    "doctor": "check the environment: versions, native libraries, decoders, accelerator, cache space",
}
