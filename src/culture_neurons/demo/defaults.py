"""The demo model's training settings by default (``models.<name>.demo_training`` fills in over
them). Their own module: the workflow's planning reads them to compare a config with the shipped
model, and must not import transformers to build the DAG."""

DEFAULT_TRAINING = {
    "seed": 0,
    "steps": 750,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "hidden_size": 128,
    "layers": 4,
    "intermediate_size": 512,
}
