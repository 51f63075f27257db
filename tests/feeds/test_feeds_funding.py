"""Funding announcements parsed from venue frames: the rate and the funding time, per symbol."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from feeds import binance, bybit, okx
from feeds.errors import FrameError, RejectReason
from feeds.funding import FundingNotice

pytestmark = pytest.mark.unit

FUNDING_TS = 1700006400000


def notice(symbol: str, rate: str, ts_ms: int, source: str) -> FundingNotice:
    return FundingNotice(symbol, Decimal(rate), ts_ms, source)


def test_binance_frames_announce_the_rate_at_the_next_funding_time(
    frames: Callable[[str], list[str]],
) -> None:
    """Combined-stream, raw and all-market frames: ``r`` at ``T`` for each mapped symbol;
    the subscription answer and unmapped symbols give nothing."""
    symbols = {"BTCUSDT": "BTC-PERP", "ETHUSDT": "ETH-PERP"}
    parsed = [binance.funding(frame, symbols) for frame in frames("binance")]
    btc = notice("BTC-PERP", "0.00010000", FUNDING_TS, "binance")
    eth = notice("ETH-PERP", "0.00006547", FUNDING_TS, "binance")
    assert parsed[:5] == [[], [btc], [eth], [btc], [btc, eth]]


def test_a_binance_contract_without_funding_announces_nothing() -> None:
    """A delivery contract's frame carries ``"r":""`` and ``"T":0``: no announcement."""
    frame = (
        '{"e":"markPriceUpdate","E":1700000001000,"s":"BTCUSDT_231229","p":"36900.1",'
        '"P":"36890.2","i":"36505.8","r":"","T":0}'
    )
    assert binance.funding(frame, {"BTCUSDT_231229": "BTC-Q"}) == []


def test_a_bad_binance_rate_is_refused() -> None:
    """A rate that is not a decimal string raises FrameError(bad_price)."""
    frame = (
        '{"e":"markPriceUpdate","E":1,"s":"BTCUSDT","p":"1","i":"1","r":0.0001,"T":1700006400000}'
    )
    with pytest.raises(FrameError) as caught:
        binance.funding(frame, {"BTCUSDT": "BTC-PERP"})
    assert caught.value.reason is RejectReason.BAD_PRICE


def test_bybit_tickers_announce_the_rate_at_the_next_funding_time(
    frames: Callable[[str], list[str]],
) -> None:
    """The snapshot announces; deltas that change neither field (or repeat the rate) say
    nothing; a delta with a new rate announces it at the funding time already known."""
    parser = bybit.BybitFunding({"BTCUSDT": "BTC-PERP"})
    parsed = [parser(frame) for frame in frames("bybit")]
    assert parsed == [[], [notice("BTC-PERP", "0.0001", FUNDING_TS, "bybit")], [], [], [], []]
    delta = (
        '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",'
        '"fundingRate":"-0.000212"},"cs":98271551500,"ts":1700000001500}'
    )
    assert parser(delta) == [notice("BTC-PERP", "-0.000212", FUNDING_TS, "bybit")]


def test_bybit_announces_nothing_before_it_knows_the_funding_time() -> None:
    """A delta with a rate before any snapshot: the funding time is unknown, so nothing."""
    parser = bybit.BybitFunding({"BTCUSDT": "BTC-PERP"})
    delta = (
        '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",'
        '"fundingRate":"0.0001"},"cs":1,"ts":1700000001500}'
    )
    assert parser(delta) == []


def test_okx_funding_rate_channel_announces_the_rate_at_its_funding_time() -> None:
    """The ``funding-rate`` push of OKX's docs: ``fundingRate`` at ``fundingTime`` (the
    forecast ``nextFundingRate`` is not used); other channels give nothing."""
    push = (
        '{"arg":{"channel":"funding-rate","instId":"BTC-USD-SWAP"},'
        '"data":[{"formulaType":"noRate","fundingRate":"0.0001875391284828",'
        '"fundingTime":"1700726400000","impactValue":"","instId":"BTC-USD-SWAP",'
        '"instType":"SWAP","interestRate":"","maxFundingRate":"0.00375",'
        '"method":"current_period","minFundingRate":"-0.00375","nextFundingRate":"",'
        '"nextFundingTime":"1700755200000","premium":"0.0001233824646391",'
        '"settFundingRate":"0.0001699799259033","settState":"settled",'
        '"ts":"1700724675402"}]}'
    )
    swaps = {"BTC-USD-SWAP": "BTCUSD"}
    assert okx.funding(push, swaps) == [
        notice("BTCUSD", "0.0001875391284828", 1700726400000, "okx")
    ]
    mark = (
        '{"arg":{"channel":"mark-price","instId":"BTC-USD-SWAP"},'
        '"data":[{"instType":"SWAP","instId":"BTC-USD-SWAP","markPx":"36512.3",'
        '"ts":"1700000001000"}]}'
    )
    assert okx.funding(mark, swaps) == []
    assert okx.funding("pong", swaps) == []
