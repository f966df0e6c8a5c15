"""Which value wins when the chart's values and an operator's KubeSpawner config set the same setting (pure).

The chart writes its ``singleuser`` values (with their defaults: the image, ``startTimeout``...) into ML Hub's
own section, ``c.MLHubKubernetesSpawner``, which traitlets prefers over ``c.KubeSpawner`` and ``c.Spawner``.
An operator's ``c.KubeSpawner.start_timeout`` (``userConfig``, or ``hub.config.KubeSpawner``) would then be
silently ignored. :func:`yield_to_operator` hands such settings back to the operator's value; a value the
operator puts in ``c.MLHubKubernetesSpawner`` itself stays as it is.
"""

import copy

from traitlets.config import LazyConfigValue


def section_values(config, sections):
    """``{(section, trait): value}`` of what ``config`` sets in ``sections``."""
    return {
        (section, trait): value
        for section in sections
        if config._has_section(section)
        for trait, value in config[section].items()
    }


def yield_to_operator(config, section, chart_set, parents, before):
    """Drop from ``config[section]`` the chart's values that an operator's value in a parent section replaces.

    ``chart_set``: ``{trait: value}`` the chart put in ``section``; ``parents``: the class's other sections,
    least specific first (``Spawner``, ``KubeSpawner``...); ``before``: :func:`section_values` of ``parents``
    before the chart's values and the operator's config were loaded (ML Hub's own settings, which do not
    count as the operator's). An operator's ``c.KubeSpawner.environment.update(...)`` (a lazy value) is
    applied on top of the chart's value. Returns the traits handed over, sorted.
    """
    now = section_values(config, parents)
    handed = []
    for trait, value in chart_set.items():
        if trait not in config[section] or config[section][trait] is not value:
            continue  # the operator set ML Hub's own section: it wins
        operators = [
            now[parent, trait]
            for parent in parents
            if (parent, trait) in now and before.get((parent, trait), _UNSET) is not now[parent, trait]
        ]
        if not operators:
            continue
        if not any(isinstance(v, LazyConfigValue) for v in operators):
            del config[section][trait]  # the most specific of the operator's sections wins, as in traitlets
        else:
            merged = copy.deepcopy(value)
            for operator in operators:
                merged = operator.get_value(merged) if isinstance(operator, LazyConfigValue) else operator
            config[section][trait] = merged
        handed.append(trait)
    return sorted(handed)


_UNSET = object()
