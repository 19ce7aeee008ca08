"""Which bundles a room admits: the one home of the rule "a bundle reads data only as its owners
allow" (DESIGN §6, issue 13).

The SDK applies it at ``bundle new`` and review, the coordinator at submission, and the worker,
the verifier of record, before it decrypts anything. All three call :func:`admit_bundle`
(through :func:`sdk.protocol.verify.verify_bundle`), so they cannot disagree.

* A **plan bundle** (``bundle.plan`` set) is validated against the column roles every party
  signed in the manifest (:func:`sdk.protocol.plan.validate`); its inputs are exactly the
  plan's inputs, in order; its output spec is exactly the one the plan implies
  (:func:`plan_output`), with only the privacy parameters (DP, minimum group size, released
  groups) left to the author. A ``sql`` plan bundle's plan must be exactly what its SQL
  translates to, so the SQL a reviewer reads is the plan that runs. A ``python`` plan
  bundle's code is the author's builder: what runs, and what review shows, is the plan.
* A **template bundle** must be exactly what its template generates from its parameters.
* **Custom code** (no plan: whole-table Python or SQL) runs only when the owner of every
  dataset it reads signed ``allow_custom_code = true`` for that dataset. Its privacy depends
  on code review, and review, ``room status`` and its receipts say so.
"""

from __future__ import annotations

from sdk.errors import QueryRejectedError
from sdk.protocol.models import Bundle, Manifest
from sdk.protocol.plan import DatasetColumns, validate
from sdk.protocol.planoutput import LIST_COLUMN, PERSON_COLUMN, plan_output

BY_CONSTRUCTION = "by construction"
BY_REVIEW = "depends on code review"


def guarantee_of(bundle: Bundle) -> str:
    """What a run's privacy rests on, as review, ``room status`` and receipts say it."""
    return BY_REVIEW if bundle.custom_code else BY_CONSTRUCTION


def plan_columns(manifest: Manifest) -> dict[str, DatasetColumns]:
    """Every dataset's id column, id kind and column roles, as a plan is validated against."""
    return {d.name: d.plan_columns() for d in manifest.datasets}


def admit_bundle(manifest: Manifest, bundle: Bundle) -> None:
    """Raise unless ``bundle`` may run in the room ``manifest`` describes (module docstring).

    Raises:
        QueryRejectedError: (E_QUERY_REJECTED) the plan reads a column outside its role, its
            inputs, output spec or SQL differ from the plan, a list goes to someone other than
            the first input's owner, or custom code reads a dataset whose owner did not allow
            it. Messages name datasets, columns and constructs, never data.
        InputError: a template bundle that its template does not generate.
    """
    if bundle.kind == "template":
        _admit_template(bundle)
    if bundle.plan is None:
        if bundle.kind == "plan":
            raise QueryRejectedError("bundle: kind plan without a plan")
        closed = [n for n in bundle.datasets if not manifest.dataset(n).allow_custom_code]
        if closed:
            raise QueryRejectedError(
                f"bundle: custom code reads {closed[0]!r}, whose owner did not allow custom "
                "code (allow_custom_code); write the query as a plan instead")
        return
    plan = bundle.plan
    if bundle.kind not in ("sql", "python", "plan", "template"):
        raise QueryRejectedError(f"bundle: a plan bundle of kind {bundle.kind!r}")
    if bundle.kind == "plan" and bundle.code:
        raise QueryRejectedError("bundle: kind plan carries no code (review shows the plan)")
    if bundle.kind != "template" and bundle.params:
        raise QueryRejectedError("bundle: a plan bundle takes no params")
    if tuple(plan.inputs) != bundle.datasets:
        raise QueryRejectedError("bundle: inputs differ from the plan's inputs")
    validate(plan, plan_columns(manifest))
    if bundle.output != plan_output(plan, bundle.output):
        raise QueryRejectedError("bundle: output spec differs from the one its plan implies")
    cells = 1
    for group in plan.group_by:
        cells *= len(group.domain) if group.domain is not None else 1
    if cells > bundle.output.max_groups:
        raise QueryRejectedError("bundle: the declared group domains exceed max_groups")
    if plan.release == "list":
        if bundle.output.dp is not None:
            raise QueryRejectedError("bundle: a list release cannot carry differential privacy")
        owner = manifest.dataset(plan.unit_dataset).owner
        if bundle.recipients != (owner,):
            raise QueryRejectedError(
                f"bundle: a list of {plan.unit_dataset!r} identifiers goes only to its owner "
                f"{owner!r}")
    if bundle.kind == "sql":
        from sdk.protocol.sqlplan import plan_from_sql

        again = plan_from_sql(bundle.code, plan_columns(manifest),
                              max_contributions=plan.max_contributions,
                              domains={g.name: g.domain for g in plan.group_by
                                       if g.domain is not None})
        if again != plan:
            raise QueryRejectedError("bundle: the plan differs from what its SQL translates to")


def _admit_template(bundle: Bundle) -> None:
    from sdk.errors import InputError
    from sdk.protocol.templates import build

    if bundle.template is None:
        raise InputError("bundle: template kind and template name go together")
    generated = build(bundle.template, bundle.params)
    if generated.code != bundle.code or generated.output != bundle.output \
            or generated.plan != bundle.plan:
        raise InputError(
            f"bundle: code, plan or output spec differ from what template "
            f"{bundle.template!r} generates from its parameters")


__all__ = [
    "BY_CONSTRUCTION", "BY_REVIEW", "LIST_COLUMN", "PERSON_COLUMN", "admit_bundle",
    "guarantee_of", "plan_columns", "plan_output",
]
