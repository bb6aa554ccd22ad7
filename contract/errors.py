"""The exceptions a contract check raises. Messages name the field, the value and what is allowed."""


class ContractError(ValueError):
    """Data does not follow one of edgetune's contracts (manifest, message, topic, tensor)."""


class IntegrityError(ContractError):
    """A bundle's files do not match the checksums its manifest records."""
