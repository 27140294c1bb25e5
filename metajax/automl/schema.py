"""The column schema of a table, checked when AutoML fits and again when it predicts.

A DataFrame's column names are the schema. At predict time a DataFrame with the fit's names
in another order is reordered by name; a missing, extra, renamed or duplicated column is a
`DataError` that names it. An array has no names: it is matched by position, and only its
column count is checked. Every check runs on the table's shape and names before any
preprocessing, in milliseconds.
"""

from __future__ import annotations

import collections

import numpy as np

from metajax.data.tabular import DataError


def names_of(X) -> list[str] | None:
  """The column names of a DataFrame-like X (as strings), or None for an array."""
  cols = getattr(X, "columns", None)
  return None if cols is None else [str(c) for c in cols]


def shape_of(X) -> tuple[int, int]:
  """(rows, columns) of a 2-D table; DataError for anything that is not 2-D."""
  shape = getattr(X, "shape", None)
  if shape is None:
    shape = np.asarray(X, dtype=object).shape
  if len(shape) == 1 and shape[0] == 0:
    shape = (0, 0)
  if len(shape) != 2:
    raise DataError("data.X", f"shape {tuple(shape)}", "a table must be 2-D",
                    "[rows, columns]")
  return int(shape[0]), int(shape[1])


def duplicates(names: list[str]) -> list[str]:
  return [n for n, k in collections.Counter(names).items() if k > 1]


def check_fit(X, columns: list[str] | None = None) -> list[str]:
  """The schema (column names) of a table about to be fitted; DataError for an empty table
  or duplicate names. Without names (an array) the columns are called x0, x1, ..."""
  rows, cols = shape_of(X)
  if rows == 0 or cols == 0:
    raise DataError("data.X", f"{rows} rows x {cols} columns", "the table is empty",
                    "at least one column and one row per label")
  names = names_of(X) or ([str(c) for c in columns] if columns is not None else None)
  if names is None:
    return [f"x{j}" for j in range(cols)]
  if len(names) != cols:
    raise DataError("data.columns", names, f"{len(names)} names for {cols} columns",
                    "one name per column")
  dup = duplicates(names)
  if dup:
    raise DataError("data.X", f"duplicate column names {dup}",
                    "column names are the schema, so each must be unique",
                    "distinct names (rename or drop the duplicates)")
  return names


def align(X, schema: list[str], named: bool):
  """X with the columns of `schema`, in its order.

  named: the fit had real names (a DataFrame or registry columns). Then a DataFrame is
  matched by name (reordered when only the order differs); an array is matched by position.
  DataError names the missing, extra or duplicated columns, or the wrong column count.
  """
  got = names_of(X)
  if got is not None and named:
    dup = duplicates(got)
    if dup:
      raise DataError("X", f"duplicate column names {dup}",
                      "column names are the schema, so each must be unique",
                      f"the fitted columns {schema}")
    missing = [n for n in schema if n not in got]
    extra = [n for n in got if n not in schema]
    if missing or extra:
      parts = ([f"missing {missing}"] if missing else []) + ([f"extra {extra}"] if extra else [])
      raise DataError("X", f"columns {got}", "the columns differ from the fitted table's: "
                      + ", ".join(parts) + " (a renamed column is both)",
                      f"the fitted columns {schema} (any order)")
    return X if got == schema else X[schema]
  _, cols = shape_of(X)
  if cols != len(schema):
    raise DataError("X", f"{cols} columns", "the column count differs from the fitted table's",
                    f"{len(schema)} columns" + (f" {schema}" if named else ""))
  return X
