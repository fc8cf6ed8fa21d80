"""The error every config check raises."""


class ConfigError(ValueError):
  """A config file or override is malformed."""
