"""Circuits: a GQA-native graph of heads and MLPs, exact patching, edge attribution (EAP, EAP-IG, AtP), circuit
selection and evaluation (faithfulness, CPR/CMD), export and drawing."""
