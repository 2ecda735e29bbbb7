"""Find culture-sensitive neurons in vision-language models and test them by ablation."""

__version__ = "0.1.0"
