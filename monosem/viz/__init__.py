"""What the researcher sees: plotly figures (``figures``), widgets on pure functions (``widgets``) and feature dashboards (``dashboard``)."""
