"""Every word the notifier says to a user, per language. Pure data.

zh-TW and zh-HK are written for their readers, not converted from Simplified: Taiwan tops up by 儲值 and
speaks of 入帳, Hong Kong 充值 and 到賬, addresses the reader as 你 and has support 跟進 a case.
"""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

from contracts.events import OrderStatus

S = OrderStatus

TITLES: dict[str, dict[OrderStatus, str]] = {
    "en": {
        S.PAID: "Payment received",
        S.CREDITED: "Top-up credited",
        S.DELAYED: "Your top-up is delayed",
        S.UNDER_REVIEW: "Your top-up is under review",
        S.REMEDIATING: "We are fixing your top-up",
        S.COMPENSATED: "Compensation added",
        S.REFUNDED: "Top-up refunded",
        S.NEEDS_SUPPORT: "Our support team is on your top-up",
        S.EXPIRED: "Top-up order expired",
    },
    "zh-CN": {
        S.PAID: "已收到付款",
        S.CREDITED: "充值已到账",
        S.DELAYED: "充值到账延迟",
        S.UNDER_REVIEW: "充值正在审核",
        S.REMEDIATING: "正在为您处理充值",
        S.COMPENSATED: "补偿已发放",
        S.REFUNDED: "充值已退款",
        S.NEEDS_SUPPORT: "客服正在处理您的充值",
        S.EXPIRED: "充值订单已过期",
    },
    "zh-TW": {
        S.PAID: "已收到付款",
        S.CREDITED: "儲值已入帳",
        S.DELAYED: "儲值入帳延遲",
        S.UNDER_REVIEW: "儲值審核中",
        S.REMEDIATING: "正在為您處理儲值",
        S.COMPENSATED: "補償已發放",
        S.REFUNDED: "儲值已退款",
        S.NEEDS_SUPPORT: "客服正在處理您的儲值",
        S.EXPIRED: "儲值訂單已逾期",
    },
    "zh-HK": {
        S.PAID: "已收到付款",
        S.CREDITED: "充值已到賬",
        S.DELAYED: "充值到賬延誤",
        S.UNDER_REVIEW: "充值正在審核",
        S.REMEDIATING: "正在為你處理充值",
        S.COMPENSATED: "補償已發放",
        S.REFUNDED: "充值已退款",
        S.NEEDS_SUPPORT: "客戶服務團隊正在跟進你的充值",
        S.EXPIRED: "充值訂單已過期",
    },
}

BODIES: dict[str, dict[OrderStatus, str]] = {
    "en": {
        S.PAID: "We received your payment of {money}. Crediting now.",
        S.CREDITED: "{money} has been added to your wallet.",
        S.DELAYED: "Your payment of {money} is safe; crediting is taking longer than usual.{eta}",
        S.UNDER_REVIEW: "Your payment of {money} is under a routine review.{eta}",
        S.REMEDIATING: "Your payment of {money} is safe; we are retrying the credit.{eta}",
        S.COMPENSATED: "We added a compensation for the delay of your top-up of {money}.",
        S.REFUNDED: "We could not credit {money}; it is being refunded to your original payment method.",
        S.NEEDS_SUPPORT: "Your payment of {money} is safe; a person is handling it now.",
        S.EXPIRED: "Your order of {money} was not paid in time and is now closed; nothing was charged.",
    },
    "zh-CN": {
        S.PAID: "已收到您支付的 {money}，正在为您充值。",
        S.CREDITED: "{money} 已充值到您的钱包。",
        S.DELAYED: "您支付的 {money} 是安全的，到账比平时慢。{eta}",
        S.UNDER_REVIEW: "您支付的 {money} 正在例行审核。{eta}",
        S.REMEDIATING: "您支付的 {money} 是安全的，我们正在重新为您充值。{eta}",
        S.COMPENSATED: "因充值延迟，我们已为您的 {money} 充值发放补偿。",
        S.REFUNDED: "{money} 未能到账，正在原路退款。",
        S.NEEDS_SUPPORT: "您支付的 {money} 是安全的，客服正在人工处理。",
        S.EXPIRED: "您 {money} 的充值订单未在时限内付款，现已关闭，未扣任何款项。",
    },
    "zh-TW": {
        S.PAID: "已收到您支付的 {money}，正在為您儲值。",
        S.CREDITED: "{money} 已儲值到您的錢包。",
        S.DELAYED: "您支付的 {money} 安全無虞，只是入帳時間比平常久。{eta}",
        S.UNDER_REVIEW: "您支付的 {money} 正在進行例行審核。{eta}",
        S.REMEDIATING: "您支付的 {money} 安全無虞，我們正在重新為您儲值。{eta}",
        S.COMPENSATED: "由於儲值延遲，我們已針對您 {money} 的儲值發放補償。",
        S.REFUNDED: "{money} 未能入帳，款項將退回您原本的付款方式。",
        S.NEEDS_SUPPORT: "您支付的 {money} 安全無虞，客服人員正在為您處理。",
        S.EXPIRED: "您 {money} 的儲值訂單未在期限內付款，現已關閉，不會扣任何款項。",
    },
    "zh-HK": {
        S.PAID: "已收到你支付的 {money}，正在為你充值。",
        S.CREDITED: "{money} 已存入你的錢包。",
        S.DELAYED: "你支付的 {money} 很安全，只是到賬時間比平常長。{eta}",
        S.UNDER_REVIEW: "你支付的 {money} 正在進行例行審核。{eta}",
        S.REMEDIATING: "你支付的 {money} 很安全，我們正在重新為你充值。{eta}",
        S.COMPENSATED: "由於充值延誤，我們已就你 {money} 的充值發放補償。",
        S.REFUNDED: "{money} 未能到賬，款項正退回你原本的付款方式。",
        S.NEEDS_SUPPORT: "你支付的 {money} 很安全，客戶服務團隊正在跟進。",
        S.EXPIRED: "你 {money} 的充值訂單未有在限期內付款，現已關閉，並無扣取任何款項。",
    },
}

ETA = {
    "en": " Expected by {time}.",
    "zh-CN": "预计{time}前到账。",
    "zh-TW": "預計於{time}前入帳。",
    "zh-HK": "預計於{time}前到賬。",
}
IN_UTC = {"en": "{time} UTC", "zh-CN": "{time}（UTC）", "zh-TW": "{time}（UTC）", "zh-HK": "{time}（UTC）"}
"""A time shown in UTC because the user's time zone is unknown says so."""
IN_OFFSET = {
    "en": "{time} UTC{offset}",
    "zh-CN": "{time}（UTC{offset}）",
    "zh-TW": "{time}（UTC{offset}）",
    "zh-HK": "{time}（UTC{offset}）",
}
"""A time shown in a zone the user did not choose (their browser's) says which, by its offset from UTC (UTC+8)."""
ORDER_REF = {
    "en": " Order: {order_id}",
    "zh-CN": " 订单号：{order_id}",
    "zh-TW": " 訂單編號：{order_id}",
    "zh-HK": " 訂單編號：{order_id}",
}

STEP_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "submitted": "Order submitted",
        "paid": "Payment received",
        "crediting": "Crediting",
        "credited": "Credited",
        S.UNDER_REVIEW: "Under review",
        S.DELAYED: "Delayed",
        S.REMEDIATING: "Fixing the credit",
        S.COMPENSATED: "Compensation added",
        S.REFUNDED: "Refunded",
        S.NEEDS_SUPPORT: "With our support team",
        S.EXPIRED: "Expired unpaid",
    },
    "zh-CN": {
        "submitted": "订单已提交",
        "paid": "已付款",
        "crediting": "充值中",
        "credited": "已到账",
        S.UNDER_REVIEW: "审核中",
        S.DELAYED: "到账延迟",
        S.REMEDIATING: "正在处理",
        S.COMPENSATED: "已补偿",
        S.REFUNDED: "已退款",
        S.NEEDS_SUPPORT: "客服处理中",
        S.EXPIRED: "未付款，已过期",
    },
    "zh-TW": {
        "submitted": "訂單已送出",
        "paid": "已付款",
        "crediting": "儲值中",
        "credited": "已入帳",
        S.UNDER_REVIEW: "審核中",
        S.DELAYED: "入帳延遲",
        S.REMEDIATING: "處理中",
        S.COMPENSATED: "已補償",
        S.REFUNDED: "已退款",
        S.NEEDS_SUPPORT: "客服處理中",
        S.EXPIRED: "未付款，已逾期",
    },
    "zh-HK": {
        "submitted": "訂單已提交",
        "paid": "已付款",
        "crediting": "充值中",
        "credited": "已到賬",
        S.UNDER_REVIEW: "審核中",
        S.DELAYED: "到賬延誤",
        S.REMEDIATING: "跟進中",
        S.COMPENSATED: "已補償",
        S.REFUNDED: "已退款",
        S.NEEDS_SUPPORT: "客戶服務跟進中",
        S.EXPIRED: "未付款，已過期",
    },
}

PAGE_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your top-up",
        "order": "Order",
        "amount": "Amount",
        "live": "Live",
        "reconnecting": "Reconnecting…",
        "paused": "Paused: this order is open in another window",
        "waiting": "Waiting for news about this order",
        "waiting_detail": "This page updates by itself as soon as anything happens.",
        "quote": "Quote this order number to support.",
        "eta": "Expected by {time}",
        "expired_next": " To top up, place a new order.",
    },
    "zh-CN": {
        "title": "您的充值",
        "order": "订单号",
        "amount": "金额",
        "live": "实时",
        "reconnecting": "正在重新连接…",
        "paused": "已暂停：此订单已在另一个窗口中打开",
        "waiting": "正在等待该订单的最新进展",
        "waiting_detail": "一有进展，本页会自动更新。",
        "quote": "联系客服时请提供此订单号。",
        "eta": "预计{time}前到账",
        "expired_next": "如需充值，请重新下单。",
    },
    "zh-TW": {
        "title": "您的儲值",
        "order": "訂單編號",
        "amount": "金額",
        "live": "即時",
        "reconnecting": "正在重新連線…",
        "paused": "已暫停：這筆訂單已在另一個視窗開啟",
        "waiting": "正在等候這筆訂單的最新進度",
        "waiting_detail": "一有進度，本頁會自動更新。",
        "quote": "聯絡客服時請提供此訂單編號。",
        "eta": "預計於{time}前入帳",
        "expired_next": "如需儲值，請重新下單。",
    },
    "zh-HK": {
        "title": "你的充值",
        "order": "訂單編號",
        "amount": "金額",
        "live": "即時",
        "reconnecting": "正在重新連接…",
        "paused": "已暫停：這張訂單已在另一個視窗打開",
        "waiting": "正在等候這張訂單的最新進展",
        "waiting_detail": "一有進展，本頁會自動更新。",
        "quote": "聯絡客戶服務時請提供此訂單編號。",
        "eta": "預計於{time}前到賬",
        "expired_next": "如需充值，請重新落單。",
    },
}
