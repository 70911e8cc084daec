"""Evaluation: AUC / UAUC / GAUC with the warm/cold split (``metrics``), the by-user bootstrap
(``bootstrap``) and scoring a split with a trained run (``evaluate``)."""
