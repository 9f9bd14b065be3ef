"""Transfers (转接): blind, attended and one-key transfers of a call in progress, driven
by an agent through :class:`ivr.transfers.service.TransferService` (docs/transfers.md)."""
