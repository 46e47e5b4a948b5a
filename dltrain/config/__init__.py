"""The config schemas, their validation, values' types and did-you-mean."""
