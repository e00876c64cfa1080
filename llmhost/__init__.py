"""llmhost: provision UK/EU hosts into a production LLM endpoint with pyinfra."""

__version__ = "0.1.0"
