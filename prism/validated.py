"""Configurations that report every problem at once, rather than the first one found."""

from __future__ import annotations

from prism.errors import ConfigError


class Validated:
    """Base of the configuration dataclasses: ``problems()`` lists what is wrong, one line
    each; ``validate()`` raises them all in one ``ConfigError``, so an operator fixes a
    configuration in one pass."""

    __slots__ = ()

    def problems(self) -> list[str]:
        raise NotImplementedError

    def validate(self) -> None:
        """Raise ``ConfigError`` listing every problem, if there is any."""
        found = self.problems()
        if found:
            raise ConfigError("\n".join(found))
